package roster.compat.matrix;

/** An instance as registered: the registry service name every protocol looks it up by, and "ip:port". */
record Endpoint(String service, String address, Object handle) {}
