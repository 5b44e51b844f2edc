"""etcd's v3 gRPC API (vendored, see README.md): the stubs the controller's etcd store uses."""
