package roster.compat.dubbo.provider;

import org.apache.dubbo.config.spring.context.annotation.EnableDubbo;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/** The provider application: exports {@link EchoServiceImpl} (scanned from this package only). */
@SpringBootApplication
@EnableDubbo(scanBasePackages = "roster.compat.dubbo.provider")
public class ProviderApp {}
