package roster.compat.matrix;

/** Addresses of the server under test. */
final class Env {
  private Env() {}

  static String get(String name, String dflt) {
    String p = System.getProperty(name);
    if (p != null && !p.isBlank()) return p;
    String e = System.getenv(name);
    if (e != null && !e.isBlank()) return e;
    return dflt;
  }

  /** host:port of Roster's HTTP listener (native API, Nacos, Eureka); Nacos gRPC is port + 1000. */
  static String http() {
    return get("ROSTER_HTTP", "127.0.0.1:8848").replaceFirst("^https?://", "").replaceFirst("/$", "");
  }

  /** Suffix of this run's service names, so runs and other suites can share a server. */
  static final String RUN = Long.toHexString(System.nanoTime() & 0xffffffL);

  /** ZooKeeper connect string. */
  static String zk() {
    return get("ZK_CONNECT", "127.0.0.1:2181");
  }
}
