package roster.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** LeaderLatch: exactly one leader among three clients; leadership moves when it closes. */
class LeaderLatchTest {
    private final List<CuratorFramework> clients = new ArrayList<>();
    private final List<LeaderLatch> latches = new ArrayList<>();
    private final String root = Zk.uniqueRoot("latch");

    @AfterEach
    void cleanup() throws Exception {
        for (LeaderLatch latch : latches) {
            try {
                if (latch.getState() == LeaderLatch.State.STARTED) latch.close();
            } catch (Exception | Error e) {
                // the latch whose client was closed on purpose cannot delete its node itself
            }
        }
        try {
            Zk.deleteTree(clients.get(0), root);
        } finally {
            for (CuratorFramework c : clients) c.close();
        }
    }

    private long leaders() {
        return latches.stream()
                .filter(l -> l.getState() == LeaderLatch.State.STARTED && l.hasLeadership())
                .count();
    }

    private LeaderLatch currentLeader() {
        return latches.stream()
                .filter(l -> l.getState() == LeaderLatch.State.STARTED && l.hasLeadership())
                .findFirst()
                .orElseThrow();
    }

    @Test
    void exactlyOneLeaderAndSuccession() throws Exception {
        for (int i = 0; i < 3; i++) {
            CuratorFramework client = Zk.client();
            clients.add(client);
            LeaderLatch latch = new LeaderLatch(client, root + "/latch", "p" + i);
            latches.add(latch);
            latch.start();
        }
        Zk.await("one leader", 15_000, () -> leaders() == 1);
        Zk.await("all participants registered", 15_000,
                () -> { try { return latches.get(0).getParticipants().size() == 3; } catch (Exception e) { return false; } });
        LeaderLatch first = currentLeader();
        for (LeaderLatch l : latches) {
            assertEquals(first.getId(), l.getLeader().getId(), "participants disagree on the leader");
        }
        assertEquals(1, leaders());

        first.close();
        Zk.await("a new leader", 15_000, () -> leaders() == 1);
        LeaderLatch second = currentLeader();
        assertNotEquals(first.getId(), second.getId());
        assertEquals(2, second.getParticipants().size());

        // Leadership also moves when the leader's session ends.
        int index = latches.indexOf(second);
        clients.get(index).close();
        LeaderLatch last = latches.stream().filter(l -> l != first && l != second).findFirst().orElseThrow();
        Zk.await("the last participant to lead", 15_000, last::hasLeadership);
        assertTrue(last.getParticipants().size() == 1);
        clients.set(index, Zk.client());  // so cleanup has a live client at every index
    }
}
