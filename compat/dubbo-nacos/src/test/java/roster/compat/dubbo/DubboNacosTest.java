package roster.compat.dubbo;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;
import roster.compat.dubbo.consumer.ConsumerApp;
import roster.compat.dubbo.provider.ProviderApp;

/**
 * An unmodified Apache Dubbo 3 provider and consumer (two Spring Boot contexts in this JVM,
 * distinct application names, the provider's dubbo protocol on a free port) with the registry
 * {@code nacos://NACOS_ADDR} (Roster; nacos-client dials gRPC at port + 1000). Only the registry
 * address is configured. For each of Dubbo's ways to find providers — interface-level
 * registration, application-level (service discovery, with the interface → application mapping
 * kept as a Nacos config written with compare-and-set) and both at once (Dubbo's default) — the
 * provider registers, the consumer discovers it and gets the provider's reply, and once the
 * provider shuts down its registration is gone from the server.
 */
class DubboNacosTest {

  static String nacosAddr() {
    String p = System.getProperty("NACOS_ADDR", System.getenv("NACOS_ADDR"));
    if (p == null || p.isBlank()) {
      throw new IllegalStateException("set NACOS_ADDR to the Nacos HTTP address, e.g. 127.0.0.1:8848");
    }
    return p;
  }

  static {
    String offset = System.getenv("NACOS_GRPC_OFFSET");
    if (offset != null && !offset.isBlank()) System.setProperty("nacos.server.grpc.port.offset", offset);
  }

  static ConfigurableApplicationContext start(Class<?> app, String name, String registerMode,
      String migration, String group) {
    return new SpringApplicationBuilder(app)
        .web(WebApplicationType.NONE)
        .properties(
            "dubbo.application.name=" + name,
            "dubbo.application.qos-enable=false",
            // No address/metadata cache files under ~/.dubbo: every run has new names.
            "dubbo.application.enable-file-cache=false",
            "dubbo.application.register-mode=" + registerMode,
            "dubbo.application.service-discovery.migration=" + migration,
            "dubbo.registry.address=nacos://" + nacosAddr(),
            "dubbo.protocol.name=dubbo",
            "dubbo.protocol.port=-1", // a free port
            // This run's own service group, so runs sharing a server never see each other.
            "dubbo.provider.group=" + group,
            "dubbo.consumer.group=" + group,
            "spring.main.banner-mode=off")
        .run();
  }

  /** In an instance list: at least one instance (Dubbo registers its host's address, not loopback). */
  static final String HAS_HOSTS = "\"hosts\":[{";

  static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

  /** Instances of a Nacos service as the server reports them (Nacos HTTP open API v1). */
  static String instances(String service) throws Exception {
    String base = "http://" + nacosAddr().split(",")[0];
    URI uri = URI.create(base + "/nacos/v1/ns/instance/list?serviceName="
        + URLEncoder.encode(service, StandardCharsets.UTF_8));
    HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(10)).GET().build(),
        HttpResponse.BodyHandlers.ofString());
    return r.statusCode() == 200 ? r.body() : "HTTP " + r.statusCode() + ": " + r.body();
  }

  static void waitFor(BooleanSupplier cond, Duration timeout, String what) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (System.nanoTime() < deadline) {
      if (cond.getAsBoolean()) return;
      Thread.sleep(100);
    }
    throw new AssertionError("timed out after " + timeout + " waiting for " + what);
  }

  static boolean check(java.util.concurrent.Callable<Boolean> c) {
    try {
      return c.call();
    } catch (Exception e) {
      return false;
    }
  }

  @ParameterizedTest(name = "register-mode={0}, migration={1}")
  @CsvSource({
      "interface, FORCE_INTERFACE",
      "instance, FORCE_APPLICATION",
      "all, APPLICATION_FIRST",
  })
  void consumerCallsProviderThroughNacos(String registerMode, String migration) throws Exception {
    String run = Long.toHexString(System.nanoTime());
    String providerName = "roster-dubbo-provider-" + run;
    String group = "roster-" + run;
    // Dubbo's interface-level Nacos service name: providers:{interface}:{version}:{group}
    String interfaceService = "providers:roster.compat.dubbo.api.EchoService::" + group;

    ConfigurableApplicationContext provider = start(ProviderApp.class, providerName, registerMode, migration, group);
    ConfigurableApplicationContext consumer = null;
    try {
      // The provider's registration is on the server in the shape its register-mode asks for.
      String expect = registerMode.equals("interface") ? interfaceService : providerName;
      waitFor(() -> check(() -> instances(expect).contains(HAS_HOSTS)), Duration.ofSeconds(30),
          "the provider registered as " + expect);
      if (registerMode.equals("all")) {
        waitFor(() -> check(() -> instances(interfaceService).contains(HAS_HOSTS)),
            Duration.ofSeconds(30), "the provider registered as " + interfaceService);
      }

      consumer = start(ConsumerApp.class, "roster-dubbo-consumer-" + run, registerMode, migration, group);
      ConsumerApp.Caller caller = consumer.getBean(ConsumerApp.Caller.class);
      AtomicReference<String> reply = new AtomicReference<>();
      AtomicReference<Exception> last = new AtomicReference<>();
      try {
        waitFor(() -> {
          try {
            reply.set(caller.call("hi"));
            return true;
          } catch (Exception e) {
            last.set(e); // "No provider available" until the consumer has found the provider
            return false;
          }
        }, Duration.ofSeconds(30), "a reply from the provider");
      } catch (AssertionError e) {
        if (last.get() != null) e.addSuppressed(last.get());
        throw e;
      }
      // Over the network (the dubbo protocol at the address from the registry), not in-process.
      assertEquals("echo:hi from " + providerName + " via dubbo", reply.get());
      assertEquals("echo:again from " + providerName + " via dubbo", caller.call("again"));

      // Shutting the provider down deregisters it from the server.
      provider.close();
      waitFor(() -> check(() -> !instances(expect).contains(HAS_HOSTS)), Duration.ofSeconds(30),
          "the provider gone from " + expect);
    } finally {
      provider.close();
      if (consumer != null) consumer.close();
    }
  }
}
