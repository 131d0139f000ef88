package roster.compat.matrix;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.naming.pojo.Instance;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

/** nacos-client 2.x: registers over gRPC (ephemeral, bound to the connection), queries the server. */
final class NacosFront implements Front {
  static final String SERVICE = "matrix-nacos-" + Env.RUN;
  private final NamingService naming;

  NacosFront(String hostPort) throws Exception {
    Properties p = new Properties();
    p.setProperty(PropertyKeyConst.SERVER_ADDR, hostPort);
    naming = NamingFactory.createNamingService(p);
  }

  @Override
  public Endpoint register(String ip, int port) throws Exception {
    naming.registerInstance(SERVICE, ip, port);
    return new Endpoint(SERVICE, ip + ":" + port, null);
  }

  @Override
  public void deregister(Endpoint e) throws Exception {
    String[] a = e.address().split(":");
    naming.deregisterInstance(SERVICE, a[0], Integer.parseInt(a[1]));
  }

  @Override
  public Set<String> discover(String service) throws Exception {
    Set<String> out = new TreeSet<>();
    // subscribe=false: ask the server every time instead of the client's push cache.
    for (Instance i : naming.getAllInstances(service, false)) out.add(i.getIp() + ":" + i.getPort());
    return out;
  }

  @Override
  public void close() throws Exception {
    naming.shutDown();
  }

  @Override
  public String toString() {
    return "nacos-client";
  }
}
