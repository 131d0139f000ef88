package roster.compat.matrix;

import java.util.Set;
import java.util.TreeSet;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.UriSpec;

/** Apache Curator service discovery (curator-x-discovery), base path /services. */
final class CuratorFront implements Front {
  static final String SERVICE = "matrix-curator-" + Env.RUN;
  private final CuratorFramework client;
  private final ServiceDiscovery<Void> discovery;

  CuratorFront(String connect) throws Exception {
    client = CuratorFrameworkFactory.newClient(connect, 30_000, 10_000, new ExponentialBackoffRetry(200, 5));
    client.start();
    client.blockUntilConnected();
    discovery = ServiceDiscoveryBuilder.builder(Void.class).client(client).basePath("/services").build();
    discovery.start();
  }

  @Override
  public Endpoint register(String ip, int port) throws Exception {
    ServiceInstance<Void> i = ServiceInstance.<Void>builder().name(SERVICE).address(ip).port(port)
        .uriSpec(new UriSpec("{scheme}://{address}:{port}")).build();
    discovery.registerService(i);
    return new Endpoint(SERVICE, ip + ":" + port, i);
  }

  @Override
  @SuppressWarnings("unchecked")
  public void deregister(Endpoint e) throws Exception {
    discovery.unregisterService((ServiceInstance<Void>) e.handle());
  }

  @Override
  public Set<String> discover(String service) throws Exception {
    Set<String> out = new TreeSet<>();
    for (ServiceInstance<Void> i : discovery.queryForInstances(service)) out.add(i.getAddress() + ":" + i.getPort());
    return out;
  }

  @Override
  public void close() throws Exception {
    discovery.close();
    client.close();
  }

  @Override
  public String toString() {
    return "curator-x-discovery";
  }
}
