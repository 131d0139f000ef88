package roster.compat.matrix;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.dubbo.common.URL;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.registry.NotifyListener;
import org.apache.dubbo.registry.Registry;
import org.apache.dubbo.registry.RegistryFactory;
import org.apache.dubbo.rpc.model.ApplicationModel;

/**
 * Dubbo's ZooKeeper registry (ZookeeperRegistry through the RegistryFactory extension): a provider
 * URL registered under /dubbo/{interface}/providers; a consumer subscription to an interface, whose
 * latest notification is what it discovers.
 */
final class DubboFront implements Front {
  static final String INTERFACE = "roster.matrix.DubboService" + Env.RUN;
  private final ApplicationModel app;
  private final Registry registry;
  private final Map<String, List<URL>> notified = new ConcurrentHashMap<>();
  private final Set<String> subscribed = ConcurrentHashMap.newKeySet();

  DubboFront(String connect) {
    app = ApplicationModel.defaultModel();
    app.getApplicationConfigManager().setApplication(new ApplicationConfig("roster-matrix"));
    RegistryFactory factory = app.getExtensionLoader(RegistryFactory.class).getExtension("zookeeper");
    URL url = URL.valueOf("zookeeper://" + connect + "?timeout=15000&session=30000").setScopeModel(app);
    registry = factory.getRegistry(url);
  }

  /** A registry service name shown in Dubbo: providers:{interface}:{version}:{group}, or the name itself. */
  static String interfaceOf(String service) {
    if (service.startsWith("providers:")) return service.split(":", -1)[1];
    return service;
  }

  @Override
  public Endpoint register(String ip, int port) {
    URL u = URL.valueOf("dubbo://" + ip + ":" + port + "/" + INTERFACE + "?interface=" + INTERFACE
        + "&side=provider&application=roster-matrix&methods=hello&release=3.3.6").setScopeModel(app);
    registry.register(u);
    // Nacos's Dubbo convention, which Roster uses as the registry service name.
    return new Endpoint("providers:" + INTERFACE + "::", ip + ":" + port, u);
  }

  @Override
  public void deregister(Endpoint e) {
    registry.unregister((URL) e.handle());
  }

  @Override
  public Set<String> discover(String service) {
    String iface = interfaceOf(service);
    if (subscribed.add(iface)) {
      URL consumer = URL.valueOf("consumer://127.0.0.1/" + iface + "?interface=" + iface
          + "&category=providers&check=false&side=consumer&application=roster-matrix").setScopeModel(app);
      // Dubbo notifies the full provider list on subscribe and on every change.
      NotifyListener listener = urls -> notified.put(iface, List.copyOf(urls));
      registry.subscribe(consumer, listener);
    }
    Set<String> out = new TreeSet<>();
    for (URL u : notified.getOrDefault(iface, List.of())) {
      if (!"empty".equals(u.getProtocol())) out.add(u.getHost() + ":" + u.getPort());
    }
    return out;
  }

  @Override
  public void close() {
    registry.destroy();
    app.destroy();
  }

  @Override
  public String toString() {
    return "dubbo ZookeeperRegistry";
  }
}
