package roster.compat.nacos;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.config.ConfigFactory;
import com.alibaba.nacos.api.config.ConfigService;
import com.alibaba.nacos.api.exception.NacosException;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import java.util.Properties;
import org.junit.jupiter.api.Test;

/**
 * Against a Roster started with Nacos auth on (NACOS_AUTH_ADDR; user NACOS_AUTH_USER, password
 * NACOS_AUTH_PASSWORD): the real client logs in over HTTP and its gRPC calls carry the token;
 * a client without credentials is refused. Skipped when NACOS_AUTH_ADDR is not set.
 */
class AuthTest {
    private static Properties props(boolean withCredentials) {
        Properties p = new Properties();
        p.setProperty(PropertyKeyConst.SERVER_ADDR, Env.get("NACOS_AUTH_ADDR", ""));
        if (withCredentials) {
            p.setProperty(PropertyKeyConst.USERNAME, Env.get("NACOS_AUTH_USER", "nacos"));
            p.setProperty(PropertyKeyConst.PASSWORD, Env.get("NACOS_AUTH_PASSWORD", "nacos"));
        }
        return p;
    }

    @Test
    void loggedInClientWorksAndAnonymousOneIsRefused() throws Exception {
        assumeTrue(!Env.get("NACOS_AUTH_ADDR", "").isEmpty(), "NACOS_AUTH_ADDR not set");
        String svc = Env.unique("secured");
        NamingService naming = NamingFactory.createNamingService(props(true));
        ConfigService config = ConfigFactory.createConfigService(props(true));
        NamingService anonymous = NamingFactory.createNamingService(props(false));
        try {
            naming.registerInstance(svc, "10.9.0.1", 8080);
            Env.await("instance listed with a token", 10_000, () -> {
                try {
                    return naming.getAllInstances(svc).size() == 1;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            String dataId = Env.unique("secured.properties");
            assertTrue(config.publishConfig(dataId, "DEFAULT_GROUP", "k=v"));
            Env.await("config read with a token", 10_000, () -> {
                try {
                    return "k=v".equals(config.getConfig(dataId, "DEFAULT_GROUP", 5_000));
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            NacosException refused = assertThrows(NacosException.class,
                    () -> anonymous.registerInstance(svc, "10.9.0.2", 8080));
            assertEquals(NacosException.NO_RIGHT, refused.getErrCode(), refused.toString());
        } finally {
            naming.shutDown();
            config.shutDown();
            anonymous.shutDown();
        }
    }
}
