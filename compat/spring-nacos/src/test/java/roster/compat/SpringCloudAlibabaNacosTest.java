package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.cloud.context.config.annotation.RefreshScope;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;

/**
 * Two unmodified Spring Cloud Alibaba applications (nacos-discovery + nacos-config starters)
 * against the Nacos server at NACOS_ADDR (system property or environment, an HTTP host:port; the
 * client dials gRPC at port + 1000 unless NACOS_GRPC_OFFSET says otherwise). Only the server
 * address is configured. "provider" registers, "consumer" finds it through DiscoveryClient; the
 * config both import is published and then changed through the Nacos HTTP open API, and a
 * {@code @RefreshScope} bean and the Environment pick the change up; the provider's shutdown
 * deregisters it.
 */
class SpringCloudAlibabaNacosTest {

  /** A refresh-scoped bean holding a value from the Nacos config. */
  static class Greeting {
    private final String text;

    Greeting(String text) {
      this.text = text;
    }

    String text() {
      return text;
    }
  }

  @SpringBootApplication
  static class App {
    @Bean
    @RefreshScope
    Greeting greeting(@Value("${greeting:none}") String text) {
      return new Greeting(text);
    }
  }

  static String env(String name, String dflt) {
    String p = System.getProperty(name);
    if (p != null && !p.isBlank()) return p;
    String e = System.getenv(name);
    if (e != null && !e.isBlank()) return e;
    if (dflt == null) {
      throw new IllegalStateException("set " + name + " (the Nacos HTTP address, e.g. 127.0.0.1:8848)");
    }
    return dflt;
  }

  static String nacosAddr() {
    return env("NACOS_ADDR", null);
  }

  static {
    String offset = System.getenv("NACOS_GRPC_OFFSET");
    if (offset != null && !offset.isBlank()) System.setProperty("nacos.server.grpc.port.offset", offset);
  }

  // A run's own names, so the suite can share a server with other runs.
  static final String RUN = Long.toHexString(System.nanoTime());
  static final String PROVIDER = "roster-sca-provider-" + RUN;
  static final String CONSUMER = "roster-sca-consumer-" + RUN;
  static final String DATA_ID = "roster-sca-" + RUN + ".properties";
  static final String GROUP = "DEFAULT_GROUP";

  static ConfigurableApplicationContext start(String name) {
    return new SpringApplicationBuilder(App.class)
        .properties(
            "spring.application.name=" + name,
            "server.port=0",
            "spring.cloud.nacos.server-addr=" + nacosAddr(),
            "spring.config.import=nacos:" + DATA_ID + "?group=" + GROUP + "&refreshEnabled=true",
            "spring.cloud.nacos.discovery.ip=127.0.0.1",
            "spring.cloud.nacos.discovery.metadata.suite=roster-compat",
            "spring.cloud.nacos.config.timeout=5000",
            // Deregistration waits this long before the web server stops (default 10 s).
            "spring.cloud.nacos.discovery.graceful-shutdown-wait-time=100",
            "spring.main.banner-mode=off")
        .run();
  }

  static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

  static HttpResponse<String> nacosHttp(String method, String path, Map<String, String> form) throws Exception {
    String body = form.entrySet().stream()
        .map(e -> URLEncoder.encode(e.getKey(), StandardCharsets.UTF_8) + "="
            + URLEncoder.encode(e.getValue(), StandardCharsets.UTF_8))
        .collect(Collectors.joining("&"));
    String base = "http://" + nacosAddr().split(",")[0];
    HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(10));
    if (method.equals("GET")) {
      b.uri(URI.create(base + path + "?" + body)).GET();
    } else {
      b.header("Content-Type", "application/x-www-form-urlencoded")
          .method(method, HttpRequest.BodyPublishers.ofString(body));
    }
    return HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
  }

  static void publish(String content) throws Exception {
    HttpResponse<String> r = nacosHttp("POST", "/nacos/v1/cs/configs",
        Map.of("dataId", DATA_ID, "group", GROUP, "content", content, "type", "properties"));
    assertEquals(200, r.statusCode(), r.body());
    assertEquals("true", r.body().trim());
  }

  static void waitFor(BooleanSupplier cond, Duration timeout, String what) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (System.nanoTime() < deadline) {
      if (cond.getAsBoolean()) return;
      Thread.sleep(100);
    }
    throw new AssertionError("timed out after " + timeout + " waiting for " + what);
  }

  @Test
  void registersDiscoversAndRefreshesConfig() throws Exception {
    publish("greeting=hello\n");
    ConfigurableApplicationContext provider = start(PROVIDER);
    ConfigurableApplicationContext consumer = null;
    try {
      consumer = start(CONSUMER);

      // The config imported through spring.config.import is there at startup.
      assertEquals("hello", provider.getBean(Greeting.class).text());
      assertEquals("hello", consumer.getEnvironment().getProperty("greeting"));

      // Discovery: the consumer sees the provider (and itself) with the address and metadata the
      // provider registered.
      DiscoveryClient discovery = consumer.getBean(DiscoveryClient.class);
      waitFor(() -> !discovery.getInstances(PROVIDER).isEmpty(), Duration.ofSeconds(30),
          "the consumer to discover " + PROVIDER);
      List<ServiceInstance> found = discovery.getInstances(PROVIDER);
      assertEquals(1, found.size(), found.toString());
      int port = Integer.parseInt(provider.getEnvironment().getProperty("local.server.port"));
      ServiceInstance it = found.get(0);
      assertEquals("127.0.0.1", it.getHost());
      assertEquals(port, it.getPort());
      assertEquals(PROVIDER, it.getServiceId());
      assertEquals("roster-compat", it.getMetadata().get("suite"), it.getMetadata().toString());
      waitFor(() -> discovery.getServices().contains(PROVIDER) && discovery.getServices().contains(CONSUMER),
          Duration.ofSeconds(30), "both services in getServices()");
      // The server's own view (Nacos HTTP API) agrees.
      HttpResponse<String> list = nacosHttp("GET", "/nacos/v1/ns/instance/list", Map.of("serviceName", PROVIDER));
      assertEquals(200, list.statusCode(), list.body());
      assertTrue(list.body().contains("\"port\":" + port), list.body());

      // Config change through the Nacos API: the @RefreshScope bean and the Environment of both
      // applications follow.
      publish("greeting=changed\n");
      ConfigurableApplicationContext c = consumer;
      waitFor(() -> "changed".equals(provider.getBean(Greeting.class).text())
              && "changed".equals(c.getBean(Greeting.class).text()),
          Duration.ofSeconds(30), "the @RefreshScope beans to see the new greeting");
      assertEquals("changed", provider.getEnvironment().getProperty("greeting"));

      // Shutting the provider down deregisters it; the consumer's subscription hears of it.
      provider.close();
      waitFor(() -> discovery.getInstances(PROVIDER).isEmpty(), Duration.ofSeconds(30),
          "the provider to disappear after shutdown");
    } finally {
      provider.close();
      if (consumer != null) consumer.close();
      nacosHttp("DELETE", "/nacos/v1/cs/configs", Map.of("dataId", DATA_ID, "group", GROUP));
    }
  }
}
