package roster.compat.matrix;

/** The registry protocols of the matrix. */
enum Protocol {
  NATIVE,
  NACOS,
  EUREKA,
  CURATOR,
  DUBBO
}
