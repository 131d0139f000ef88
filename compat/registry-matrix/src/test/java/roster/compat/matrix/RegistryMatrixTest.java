package roster.compat.matrix;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * One registry across every protocol: an instance is registered through each of the native HTTP
 * API, nacos-client (2.x gRPC), Spring Cloud Netflix eureka-client, Curator service discovery and
 * Dubbo's ZooKeeper registry, and must be discovered through each of the others — then, once
 * deregistered through its own protocol, vanish from each of the others. Every (from, to) pair is
 * one parametrised cell, named "FROM -> TO"; target/registry-matrix.txt gets the grid.
 *
 * <p>Env (or -D): ROSTER_HTTP=host:port (Nacos gRPC at port + 1000), ZK_CONNECT=host:port.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class RegistryMatrixTest {

  static final Duration WAIT = Duration.ofSeconds(30);

  private final Map<Protocol, Front> fronts = new EnumMap<>(Protocol.class);
  /** What each protocol registered. */
  private final Map<Protocol, Endpoint> registered = new EnumMap<>(Protocol.class);
  private final Set<Protocol> deregistered = ConcurrentHashMap.newKeySet();
  private final Map<String, String> results = new ConcurrentHashMap<>();

  @BeforeAll
  void registerThroughEveryProtocol() throws Exception {
    String http = Env.http();
    String zk = Env.zk();
    fronts.put(Protocol.NATIVE, new NativeFront(http));
    fronts.put(Protocol.NACOS, new NacosFront(http));
    fronts.put(Protocol.EUREKA, new EurekaFront("http://" + http + "/eureka/"));
    fronts.put(Protocol.CURATOR, new CuratorFront(zk));
    fronts.put(Protocol.DUBBO, new DubboFront(zk));
    int n = 1;
    for (Protocol p : Protocol.values()) {
      Endpoint e = fronts.get(p).register("10.99.0." + n, 7000 + n);
      registered.put(p, e);
      n++;
    }
  }

  @AfterAll
  void closeAndReport() throws Exception {
    StringBuilder grid = new StringBuilder("registry matrix (rows: registered through, columns: discovered through)\n");
    for (String phase : List.of("discovered", "deregistration seen")) {
      grid.append('\n').append(phase).append('\n').append(String.format("%-9s", ""));
      for (Protocol to : Protocol.values()) grid.append(String.format("%-9s", to));
      grid.append('\n');
      for (Protocol from : Protocol.values()) {
        grid.append(String.format("%-9s", from));
        for (Protocol to : Protocol.values()) {
          String r = from == to ? "-" : results.getOrDefault(from + ">" + to + ":" + phase, "not run");
          grid.append(String.format("%-9s", r));
        }
        grid.append('\n');
      }
    }
    System.out.println(grid);
    Files.createDirectories(Path.of("target"));
    Files.writeString(Path.of("target", "registry-matrix.txt"), grid.toString());
    for (Front f : fronts.values()) {
      try {
        f.close();
      } catch (Exception e) {
        System.err.println("closing " + f + ": " + e);
      }
    }
  }

  static Stream<Arguments> cells() {
    List<Arguments> out = new ArrayList<>();
    for (Protocol from : Protocol.values()) {
      for (Protocol to : Protocol.values()) {
        if (from != to) out.add(Arguments.of(from, to));
      }
    }
    return out.stream();
  }

  @Order(1)
  @ParameterizedTest(name = "{0} -> {1}: discovered")
  @MethodSource("cells")
  void discovered(Protocol from, Protocol to) throws Exception {
    Endpoint e = registered.get(from);
    Front reader = fronts.get(to);
    String key = from + ">" + to + ":discovered";
    results.put(key, "FAIL");
    Set<String> seen = waitFor(() -> reader.discover(e.service()), s -> s.contains(e.address()), WAIT);
    assertEquals(Set.of(e.address()), seen,
        to + " must list exactly the instance registered through " + from + " in " + e.service());
    results.put(key, "pass");
  }

  @Order(2)
  @ParameterizedTest(name = "{0} -> {1}: deregistration seen")
  @MethodSource("cells")
  void deregistrationSeen(Protocol from, Protocol to) throws Exception {
    Endpoint e = registered.get(from);
    String key = from + ">" + to + ":deregistration seen";
    results.put(key, "FAIL");
    if (deregistered.add(from)) {
      fronts.get(from).deregister(e);
    }
    // A cell that never saw the instance proves nothing about its removal.
    assertEquals("pass", results.get(from + ">" + to + ":discovered"),
        to + " never discovered the instance registered through " + from);
    Front reader = fronts.get(to);
    Set<String> seen = waitFor(() -> reader.discover(e.service()), Set::isEmpty, WAIT);
    assertEquals(Set.of(), seen, to + " still lists " + e.service() + " after deregistration through " + from);
    results.put(key, "pass");
  }

  /** Poll until cond holds or the timeout passes; returns the last value read. */
  static Set<String> waitFor(ThrowingSupplier<Set<String>> read, java.util.function.Predicate<Set<String>> cond,
      Duration timeout) throws Exception {
    long deadline = System.nanoTime() + timeout.toNanos();
    Set<String> last = Set.of();
    Exception lastError = null;
    while (System.nanoTime() < deadline) {
      try {
        last = new TreeSet<>(read.get());
        lastError = null;
        if (cond.test(last)) return last;
      } catch (Exception ex) {
        lastError = ex;
      }
      Thread.sleep(200);
    }
    if (lastError != null) throw lastError;
    return last;
  }

  interface ThrowingSupplier<T> {
    T get() throws Exception;
  }
}
