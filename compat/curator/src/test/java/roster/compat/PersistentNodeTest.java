package roster.compat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.recipes.nodes.PersistentNode;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** PersistentNode keeps its (ephemeral) node present: after a delete and after session loss. */
class PersistentNodeTest {
    private static final byte[] DATA = "instance-1".getBytes(StandardCharsets.UTF_8);
    private CuratorFramework owner;
    private CuratorFramework other;
    private String root;

    @BeforeEach
    void connect() throws Exception {
        owner = Zk.client();
        other = Zk.client();
        root = Zk.uniqueRoot("pnode");
        other.create().forPath(root);
    }

    @AfterEach
    void cleanup() throws Exception {
        try {
            Zk.deleteTree(other, root);
        } finally {
            owner.close();
            other.close();
        }
    }

    @Test
    void recreatedAfterDelete() throws Exception {
        String path = root + "/node";
        try (PersistentNode node = new PersistentNode(owner, CreateMode.EPHEMERAL, false, path, DATA)) {
            node.start();
            assertTrue(node.waitForInitialCreate(10, TimeUnit.SECONDS));
            Zk.sync(other, path); // the owner's write may have gone through another member
            Stat first = other.checkExists().forPath(path);
            assertEquals(owner.getZookeeperClient().getZooKeeper().getSessionId(), first.getEphemeralOwner());

            other.delete().forPath(path);
            Zk.await("node recreated after delete", 10_000, () -> exists(path));
            assertArrayEquals(DATA, other.getData().forPath(path));
            assertTrue(other.checkExists().forPath(path).getCzxid() > first.getCzxid());
        }
        // Closing the recipe removes the node.
        Zk.await("node removed on close", 10_000, () -> !exists(path));
    }

    @Test
    void recreatedAfterSessionLoss() throws Exception {
        String path = root + "/node";
        CountDownLatch lost = new CountDownLatch(1);
        owner.getConnectionStateListenable().addListener((c, state) -> {
            if (state == ConnectionState.LOST) lost.countDown();
        });
        try (PersistentNode node = new PersistentNode(owner, CreateMode.EPHEMERAL, false, path, DATA)) {
            node.start();
            assertTrue(node.waitForInitialCreate(10, TimeUnit.SECONDS));
            ZooKeeper zk = owner.getZookeeperClient().getZooKeeper();
            long oldSession = zk.getSessionId();

            // End the session from outside: attach a second connection to the same session id and
            // password (the server moves the session to it) and close that connection.
            CountDownLatch attached = new CountDownLatch(1);
            ZooKeeper thief = new ZooKeeper(Zk.connectString(), 10_000, e -> {
                if (e.getState() == Watcher.Event.KeeperState.SyncConnected) attached.countDown();
            }, oldSession, zk.getSessionPasswd());
            assertTrue(attached.await(15, TimeUnit.SECONDS), "could not attach to the session");
            assertEquals(oldSession, thief.getSessionId());
            thief.close();

            assertTrue(lost.await(30, TimeUnit.SECONDS), "owner never learned its session ended");
            Zk.await("node recreated by a new session", 20_000, () -> {
                try {
                    Stat s = other.checkExists().forPath(path);
                    return s != null && s.getEphemeralOwner() != oldSession;
                } catch (Exception e) {
                    return false;
                }
            });
            long newSession = owner.getZookeeperClient().getZooKeeper().getSessionId();
            assertNotEquals(oldSession, newSession);
            assertEquals(newSession, other.checkExists().forPath(path).getEphemeralOwner());
            assertArrayEquals(DATA, other.getData().forPath(path));
        }
    }

    private boolean exists(String path) {
        try {
            return other.checkExists().forPath(path) != null;
        } catch (Exception e) {
            return false;
        }
    }
}
