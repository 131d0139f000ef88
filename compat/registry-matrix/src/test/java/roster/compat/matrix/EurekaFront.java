package roster.compat.matrix;

import java.util.Set;
import java.util.TreeSet;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * Spring Cloud Netflix eureka-client (the Netflix DiscoveryClient underneath): registering is a
 * Spring application named matrix-eureka that registers and renews itself; discovering is a second
 * application's DiscoveryClient, which fetches the registry every second.
 */
final class EurekaFront implements Front {
  static final String SERVICE = "matrix-eureka-" + Env.RUN;

  @SpringBootApplication
  static class App {}

  private final String url;
  private final ConfigurableApplicationContext consumer;
  private ConfigurableApplicationContext provider;

  EurekaFront(String url) {
    this.url = url;
    consumer = start("matrix-eureka-consumer", false);
  }

  private ConfigurableApplicationContext start(String name, boolean register) {
    return new SpringApplicationBuilder(App.class)
        .properties(
            "spring.application.name=" + name,
            "server.port=0",
            "spring.main.web-application-type=" + (register ? "servlet" : "none"),
            "eureka.client.service-url.defaultZone=" + url,
            "eureka.client.register-with-eureka=" + register,
            "eureka.client.fetch-registry=" + !register,
            "eureka.client.registry-fetch-interval-seconds=1",
            "eureka.client.initial-instance-info-replication-interval-seconds=1",
            "eureka.client.instance-info-replication-interval-seconds=1",
            "eureka.instance.lease-renewal-interval-in-seconds=1",
            "eureka.instance.lease-expiration-duration-in-seconds=10",
            "eureka.instance.prefer-ip-address=true",
            "eureka.instance.ip-address=127.0.0.1",
            "spring.main.banner-mode=off")
        .run();
  }

  @Override
  public Endpoint register(String ip, int port) {
    // A Eureka client registers itself: its own address and web server port.
    provider = start(SERVICE, true);
    String p = provider.getEnvironment().getProperty("local.server.port");
    return new Endpoint(SERVICE, "127.0.0.1:" + p, provider);
  }

  @Override
  public void deregister(Endpoint e) {
    // Shutting down cancels the lease (DELETE /eureka/apps/{app}/{id}).
    provider.close();
  }

  @Override
  public Set<String> discover(String service) {
    Set<String> out = new TreeSet<>();
    for (ServiceInstance i : consumer.getBean(DiscoveryClient.class).getInstances(service)) {
      out.add(i.getHost() + ":" + i.getPort());
    }
    return out;
  }

  @Override
  public void close() {
    if (provider != null && provider.isActive()) provider.close();
    consumer.close();
  }

  @Override
  public String toString() {
    return "spring-cloud-netflix eureka-client";
  }
}
