package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * Two unmodified Spring Cloud Netflix eureka-client applications against the Eureka server at
 * EUREKA_URL (system property or environment, e.g. http://127.0.0.1:8848/eureka/): "provider"
 * registers and renews, "consumer" discovers it through DiscoveryClient, and after the provider
 * shuts down (cancel) the consumer no longer sees it.
 */
class SpringEurekaClientTest {

  @SpringBootApplication
  static class App {}

  static String eurekaUrl() {
    String u = System.getProperty("EUREKA_URL", System.getenv("EUREKA_URL"));
    if (u == null || u.isBlank()) {
      throw new IllegalStateException("set EUREKA_URL to the Eureka base URL, e.g. http://127.0.0.1:8848/eureka/");
    }
    return u;
  }

  static ConfigurableApplicationContext start(String name, boolean register) {
    return new SpringApplicationBuilder(App.class)
        .properties(
            "spring.application.name=" + name,
            "server.port=0",
            "eureka.client.service-url.defaultZone=" + eurekaUrl(),
            "eureka.client.register-with-eureka=" + register,
            "eureka.client.fetch-registry=true",
            "eureka.client.registry-fetch-interval-seconds=1",
            "eureka.client.initial-instance-info-replication-interval-seconds=1",
            "eureka.client.instance-info-replication-interval-seconds=1",
            "eureka.instance.lease-renewal-interval-in-seconds=1",
            "eureka.instance.lease-expiration-duration-in-seconds=5",
            "eureka.instance.prefer-ip-address=true",
            "eureka.instance.ip-address=127.0.0.1",
            "spring.main.banner-mode=off")
        .run();
  }

  static void waitFor(BooleanSupplier cond, Duration timeout, String what) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (System.nanoTime() < deadline) {
      if (cond.getAsBoolean()) return;
      Thread.sleep(200);
    }
    throw new AssertionError("timed out after " + timeout + " waiting for " + what);
  }

  @Test
  void providerIsDiscoveredRenewsAndDisappearsAfterCancel() throws Exception {
    ConfigurableApplicationContext provider = start("roster-provider", true);
    ConfigurableApplicationContext consumer = start("roster-consumer", false);
    try {
      DiscoveryClient discovery = consumer.getBean(DiscoveryClient.class);
      waitFor(() -> !discovery.getInstances("roster-provider").isEmpty(), Duration.ofSeconds(60),
          "the consumer to discover the provider");
      List<ServiceInstance> found = discovery.getInstances("roster-provider");
      assertEquals(1, found.size());
      int port = Integer.parseInt(provider.getEnvironment().getProperty("local.server.port"));
      assertEquals("127.0.0.1", found.get(0).getHost());
      assertEquals(port, found.get(0).getPort());
      assertTrue(discovery.getServices().contains("roster-provider"), discovery.getServices().toString());

      // Renews keep it registered well past its 5 s lease.
      Thread.sleep(8000);
      assertEquals(1, discovery.getInstances("roster-provider").size());

      provider.close(); // Spring's shutdown cancels the registration
      provider = null;
      waitFor(() -> discovery.getInstances("roster-provider").isEmpty(), Duration.ofSeconds(30),
          "the provider to disappear after cancel");
    } finally {
      if (provider != null) provider.close();
      consumer.close();
    }
  }
}
