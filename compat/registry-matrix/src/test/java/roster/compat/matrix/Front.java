package roster.compat.matrix;

import java.util.Set;

/** One protocol's real client: register an instance, deregister it, list a service's instances. */
interface Front extends AutoCloseable {
  /** Register one instance at ip:port (a protocol may have to use its own address). */
  Endpoint register(String ip, int port) throws Exception;

  void deregister(Endpoint e) throws Exception;

  /** The "ip:port" of every instance of the registry service, as this protocol's client sees it. */
  Set<String> discover(String service) throws Exception;
}
