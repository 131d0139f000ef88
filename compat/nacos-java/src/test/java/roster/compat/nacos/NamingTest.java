package roster.compat.nacos;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.naming.listener.NamingEvent;
import com.alibaba.nacos.api.naming.pojo.Instance;
import java.net.http.HttpResponse;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The real nacos-client 2.x naming over gRPC against Roster: ephemeral instances live as long as
 * the client's connection, persistent ones until deregistered, subscriptions get pushes, and what
 * one protocol writes every other one reads (native HTTP API, ZooKeeper znodes).
 */
class NamingTest {
    private NamingService owner;
    private NamingService observer;
    private ZooKeeper zk;

    @BeforeEach
    void setUp() throws Exception {
        owner = NamingFactory.createNamingService(Env.props());
        observer = NamingFactory.createNamingService(Env.props());
        CountDownLatch connected = new CountDownLatch(1);
        zk = new ZooKeeper(Env.zkConnect(), 15_000, e -> {
            if (e.getState() == org.apache.zookeeper.Watcher.Event.KeeperState.SyncConnected) connected.countDown();
        });
        assertTrue(connected.await(15, TimeUnit.SECONDS), "ZooKeeper client connected");
    }

    @AfterEach
    void tearDown() throws Exception {
        if (owner != null) owner.shutDown();
        if (observer != null) observer.shutDown();
        if (zk != null) zk.close();
    }

    private static boolean has(List<Instance> list, String ip, int port) {
        return list.stream().anyMatch(i -> i.getIp().equals(ip) && i.getPort() == port);
    }

    private static String znode(String service, String ip, int port) {
        return "/roster/registry/public/DEFAULT_GROUP/" + service + "/" + ip + "#" + port + "#DEFAULT";
    }

    @Test
    void ephemeralInstanceIsSeenEverywhereAndVanishesWithItsConnection() throws Exception {
        String svc = Env.unique("orders");
        Instance inst = new Instance();
        inst.setIp("10.8.0.1");
        inst.setPort(8080);
        inst.setMetadata(Map.of("zone", "a"));
        owner.registerInstance(svc, inst);

        // Another client (its own gRPC connection) reads it.
        Env.await("observer sees the instance", 10_000, () -> {
            try {
                return has(observer.getAllInstances(svc), "10.8.0.1", 8080);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        Instance seen = observer.getAllInstances(svc).get(0);
        assertEquals("a", seen.getMetadata().get("zone"));
        assertTrue(seen.isEphemeral());
        assertTrue(seen.isHealthy());

        // The native API reads the same record ...
        Env.await("native API lists the instance", 10_000, () -> {
            try {
                HttpResponse<String> r = Env.http("GET", "/v1/registry/services/" + svc + "/instances", null);
                return r.statusCode() == 200 && r.body().contains("\"10.8.0.1\"") && r.body().contains("\"nacos\"");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        // ... and ZooKeeper clients see an ephemeral znode (owned by the connection's session).
        String path = znode(svc, "10.8.0.1", 8080);
        Env.await("znode exists", 10_000, () -> {
            try {
                return zk.exists(path, false) != null;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        Stat stat = zk.exists(path, false);
        assertNotNull(stat);
        assertNotEquals(0L, stat.getEphemeralOwner(), "the instance znode is ephemeral");

        // The owning client goes away: its connection's instances go with it.
        owner.shutDown();
        owner = null;
        Env.await("instance gone after the client shut down", 15_000, () -> {
            try {
                return !has(observer.getAllInstances(svc), "10.8.0.1", 8080) && zk.exists(path, false) == null;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }

    @Test
    void persistentInstanceOutlivesItsClientUntilDeregistered() throws Exception {
        String svc = Env.unique("billing");
        Instance inst = new Instance();
        inst.setIp("10.8.0.2");
        inst.setPort(9090);
        inst.setEphemeral(false);
        owner.registerInstance(svc, inst);
        String path = znode(svc, "10.8.0.2", 9090);
        Env.await("persistent znode exists", 10_000, () -> {
            try {
                return zk.exists(path, false) != null;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertEquals(0L, zk.exists(path, false).getEphemeralOwner(), "a persistent instance is a persistent znode");
        owner.shutDown();
        owner = NamingFactory.createNamingService(Env.props());
        List<Instance> list = observer.getAllInstances(svc);
        assertTrue(has(list, "10.8.0.2", 9090), "still there after its client left: " + list);
        assertFalse(list.get(0).isEphemeral());

        owner.deregisterInstance(svc, inst);
        Env.await("persistent instance deregistered", 10_000, () -> {
            try {
                return !has(observer.getAllInstances(svc), "10.8.0.2", 9090);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }

    @Test
    void subscriberIsPushedChangesFromNacosAndFromTheNativeApi() throws Exception {
        String svc = Env.unique("catalog");
        List<List<Instance>> events = new CopyOnWriteArrayList<>();
        observer.subscribe(svc, e -> {
            if (e instanceof NamingEvent) events.add(((NamingEvent) e).getInstances());
        });
        owner.registerInstance(svc, "10.8.0.3", 7070);
        Env.await("push with the Nacos-registered instance", 10_000,
                () -> events.stream().anyMatch(l -> has(l, "10.8.0.3", 7070)));

        // An instance registered through the native API (bound to a native lease) ...
        HttpResponse<String> lease = Env.http("POST", "/v1/leases", "{\"ttl_seconds\": 30}");
        assertEquals(200, lease.statusCode(), lease.body());
        String leaseId = lease.body().replaceAll("(?s).*\"id\"\\s*:\\s*(-?\\d+).*", "$1");
        HttpResponse<String> reg = Env.http("POST", "/v1/registry/services/" + svc + "/instances",
                "{\"ip\": \"10.8.0.4\", \"port\": 7071, \"lease\": " + leaseId + ", \"metadata\": {\"via\": \"native\"}}");
        assertTrue(reg.statusCode() / 100 == 2, reg.body());
        // ... is pushed to the Nacos subscriber and returned by getAllInstances.
        Env.await("push with the natively registered instance", 10_000,
                () -> events.stream().anyMatch(l -> has(l, "10.8.0.4", 7071)));
        List<Instance> all = owner.getAllInstances(svc);
        assertTrue(has(all, "10.8.0.4", 7071), "getAllInstances returns the native instance: " + all);
        Instance nativeOne = all.stream().filter(i -> i.getPort() == 7071).findFirst().orElseThrow();
        assertEquals("native", nativeOne.getMetadata().get("via"));

        // Deregistering pushes the smaller set.
        owner.deregisterInstance(svc, "10.8.0.3", 7070);
        Env.await("push without the deregistered instance", 10_000, () -> {
            List<Instance> last = events.get(events.size() - 1);
            return !has(last, "10.8.0.3", 7070) && has(last, "10.8.0.4", 7071);
        });
        Env.http("DELETE", "/v1/leases/" + leaseId, null);
    }

    @Test
    void servicesAreListed() throws Exception {
        String svc = Env.unique("listed");
        owner.registerInstance(svc, "10.8.0.5", 6060);
        Env.await("service listed", 10_000, () -> {
            try {
                return observer.getServicesOfServer(1, 10_000).getData().contains(svc);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }
}
