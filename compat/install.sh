#!/usr/bin/env bash
# Installs what compat/ needs on a fresh Debian machine; safe to run again.
#   - Debian: zookeeper (server jar + zkCli), Java 17, Maven, python3-pip if pip is missing
#   - PyPI:   compat/kazoo/requirements.txt
#   - Maven:  the Curator, nacos-client, Spring Cloud eureka-client, Spring Cloud Alibaba, Dubbo and
#             registry-matrix suites' dependencies and plugins, into ~/.m2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need_apt=()
[ -f /usr/share/java/zookeeper.jar ] || need_apt+=(zookeeper)
[ -x /usr/share/zookeeper/bin/zkCli.sh ] || need_apt+=(zookeeper)
dpkg -s zookeeper-bin > /dev/null 2>&1 || need_apt+=(zookeeper-bin)
command -v java > /dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v javac > /dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v mvn > /dev/null || need_apt+=(maven)
command -v openssl > /dev/null || need_apt+=(openssl)
python3 -m pip --version > /dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi

python3 -m pip install -q -r "$here/kazoo/requirements.txt"

# test-compile resolves the test classpath and the compiler plugin; a -q run of an empty test
# selection would also pull surefire's JUnit provider, so fetch that explicitly too.
mvn -q -B -f "$here/curator/pom.xml" test-compile
mvn -q -B -f "$here/curator/pom.xml" surefire:test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false > /dev/null
mvn -q -B -f "$here/nacos-java/pom.xml" test-compile
mvn -q -B -f "$here/nacos-java/pom.xml" surefire:test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false > /dev/null
# The Spring Cloud Netflix eureka-client suite (Spring Boot 3.5.7, spring-cloud 2025.0.0).
mvn -q -B -f "$here/eureka-java/pom.xml" test-compile
mvn -q -B -f "$here/eureka-java/pom.xml" surefire:test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false > /dev/null
# The Nacos framework suites (compat/nacos-frameworks.sh): Spring Cloud Alibaba 2023.0.3.4
# (Boot 3.3.13, spring-cloud 2023.0.5) and 2025.0.0.0 (-Psca-2025) and Dubbo 3.3.5 (Boot 3.5.7). Selecting a real test class
# with a method that does not exist makes Surefire start its JUnit provider (and so download it)
# without running anything; with -Dtest=NoSuchTest it stops before that. After these lines both
# suites also run with `mvn -o`.
for profile in "" "-Psca-2025"; do   # Spring Cloud Alibaba 2025.0.0.0, Boot 3.5.7
  mvn -q -B -f "$here/spring-nacos/pom.xml" $profile test-compile
  mvn -q -B -f "$here/spring-nacos/pom.xml" $profile surefire:test -Dtest='SpringCloudAlibabaNacosTest#prefetchOnly' \
    -Dsurefire.failIfNoSpecifiedTests=false > /dev/null
done
mvn -q -B -f "$here/dubbo-nacos/pom.xml" test-compile
mvn -q -B -f "$here/dubbo-nacos/pom.xml" surefire:test -Dtest='DubboNacosTest#prefetchOnly' \
  -Dsurefire.failIfNoSpecifiedTests=false > /dev/null
# The cross-protocol registry matrix (Curator 5.9.0, Dubbo 3.3.6, nacos-client 2.5.1, Spring Cloud
# Netflix eureka-client under Spring Boot 3.5.7).
mvn -q -B -f "$here/registry-matrix/pom.xml" test-compile
mvn -q -B -f "$here/registry-matrix/pom.xml" surefire:test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false > /dev/null
echo "compat: dependencies installed"
