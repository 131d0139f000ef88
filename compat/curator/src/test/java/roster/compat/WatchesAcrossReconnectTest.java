package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.zookeeper.AddWatchMode;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.Watcher.Event.EventType;
import org.apache.zookeeper.Watcher.Event.KeeperState;
import org.apache.zookeeper.ZooKeeper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The plain ZooKeeper Java client (under Curator) re-sends its watches with its last seen zxid
 * when it reconnects (SetWatches / SetWatches2); the server must fire at once for what changed
 * while the client was away and keep the rest registered, persistent watches included.
 */
class WatchesAcrossReconnectTest {
    private CuratorFramework writer;
    private TcpProxy proxy;
    private ZooKeeper zk;
    private String root;
    private final List<KeeperState> states = new CopyOnWriteArrayList<>();

    @BeforeEach
    void connect() throws Exception {
        writer = Zk.client();
        root = Zk.uniqueRoot("rewatch");
        writer.create().forPath(root);
        writer.create().forPath(root + "/data", "v0".getBytes());
        proxy = new TcpProxy(Zk.connectString());
        CountDownLatch connected = new CountDownLatch(1);
        zk = new ZooKeeper(proxy.address(), 10_000, e -> {
            states.add(e.getState());
            if (e.getState() == KeeperState.SyncConnected) connected.countDown();
        });
        assertTrue(connected.await(15, TimeUnit.SECONDS), "not connected through the proxy");
    }

    @AfterEach
    void cleanup() throws Exception {
        try {
            zk.close();
            proxy.close();
            Zk.deleteTree(writer, root);
        } finally {
            writer.close();
        }
    }

    @Test
    void watchesSurviveAndMissedChangesFireOnReconnect() throws Exception {
        List<String> events = new CopyOnWriteArrayList<>();
        // The client also hands connection-state events (type None) to every watcher: skip those.
        Watcher record = e -> {
            if (e.getType() != EventType.None) events.add(describe(e));
        };
        List<String> recursive = new CopyOnWriteArrayList<>();
        long sessionId = zk.getSessionId();

        zk.getData(root + "/data", record, null);
        zk.getChildren(root, record);
        zk.exists(root + "/later", record);
        zk.exists(root + "/untouched", record);
        zk.addWatch(root, e -> {
            if (e.getType() != EventType.None) recursive.add(describe(e));
        }, AddWatchMode.PERSISTENT_RECURSIVE);

        proxy.refuse(true);
        proxy.cut();
        Zk.await("client to see the disconnect", 10_000, () -> states.contains(KeeperState.Disconnected));
        writer.setData().forPath(root + "/data", "changed while away".getBytes());
        writer.create().forPath(root + "/later");
        proxy.refuse(false);

        // After SetWatches the server fires the missed changes (order among them is not specified).
        Zk.await("missed-change events", 15_000, () -> events.size() >= 3);
        assertEquals(sessionId, zk.getSessionId());
        assertEquals(
                java.util.Set.of(
                        "NodeDataChanged " + root + "/data",
                        "NodeCreated " + root + "/later",
                        "NodeChildrenChanged " + root),
                java.util.Set.copyOf(events));

        // The untouched exists-watch and the persistent recursive watch are still registered.
        writer.create().forPath(root + "/untouched");
        writer.setData().forPath(root + "/later", "x".getBytes());
        Zk.await("events after reconnect", 15_000,
                () -> events.size() >= 4 && recursive.contains("NodeDataChanged " + root + "/later"));
        assertEquals("NodeCreated " + root + "/untouched", events.get(3));
        assertTrue(recursive.contains("NodeCreated " + root + "/untouched"), recursive.toString());
        assertEquals(4, events.size(), "one-shot watches fired more than once: " + events);
    }

    private static String describe(WatchedEvent e) {
        return e.getType() + " " + e.getPath();
    }
}
