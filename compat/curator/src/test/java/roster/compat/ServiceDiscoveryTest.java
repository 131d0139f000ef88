package roster.compat;

import java.util.Collection;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** curator-x-discovery: instances registered by one client are found by name through another. */
class ServiceDiscoveryTest {
    private CuratorFramework provider;
    private CuratorFramework consumer;
    private String root;

    @BeforeEach
    void connect() throws Exception {
        provider = Zk.client();
        consumer = Zk.client();
        root = Zk.uniqueRoot("discovery");
    }

    @AfterEach
    void cleanup() throws Exception {
        try {
            Zk.deleteTree(consumer, root);
        } finally {
            provider.close();
            consumer.close();
        }
    }

    @Test
    void registerQueryUnregister() throws Exception {
        ServiceInstance<String> one = ServiceInstance.<String>builder()
                .name("orders").id("orders-1").address("10.0.0.1").port(8081).payload("zone-a").build();
        ServiceInstance<String> two = ServiceInstance.<String>builder()
                .name("orders").id("orders-2").address("10.0.0.2").port(8082).payload("zone-b").build();
        ServiceInstance<String> other = ServiceInstance.<String>builder()
                .name("billing").id("billing-1").address("10.0.0.3").port(9000).build();

        ServiceDiscovery<String> registry = ServiceDiscoveryBuilder.builder(String.class)
                .client(provider).basePath(root).build();
        try (ServiceDiscovery<String> lookup = ServiceDiscoveryBuilder.builder(String.class)
                .client(consumer).basePath(root).watchInstances(true).build()) {
            registry.start();
            lookup.start();
            registry.registerService(one);
            registry.registerService(two);
            registry.registerService(other);

            // The consumer reads another client's writes: ZooKeeper promises this session sees
            // them eventually (or after a sync), not at once — on an ensemble the consumer may sit
            // on a member that has not applied them yet. So each read is retried for up to 5 s.
            Zk.eventually(Set.of("orders", "billing"), () -> Set.copyOf(lookup.queryForNames()));
            Zk.eventually(Set.of("orders-1:10.0.0.1:8081:zone-a", "orders-2:10.0.0.2:8082:zone-b"),
                    () -> describe(lookup.queryForInstances("orders")));
            Zk.eventually(8082, () -> {
                ServiceInstance<String> byId = lookup.queryForInstance("orders", "orders-2");
                return byId == null ? null : byId.getPort();
            });

            registry.unregisterService(one);
            Zk.eventually(Set.of("orders-2:10.0.0.2:8082:zone-b"), () -> describe(lookup.queryForInstances("orders")));

            // Instances are ephemeral: when the provider's session ends, so do they.
            provider.close();
            Zk.await("instances gone with the provider's session", 15_000, () -> {
                try {
                    return lookup.queryForInstances("orders").isEmpty()
                            && lookup.queryForInstances("billing").isEmpty();
                } catch (Exception e) {
                    return false;
                }
            });
        }
    }

    private static Set<String> describe(Collection<ServiceInstance<String>> instances) {
        return instances.stream()
                .map(i -> i.getId() + ":" + i.getAddress() + ":" + i.getPort() + ":" + i.getPayload())
                .collect(Collectors.toSet());
    }

}
