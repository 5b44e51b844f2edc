"""fusionrack v1: the public gRPC contract and its generated Python stubs.

The ``*.proto`` files beside this module are the contract (documented field by field); the
``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` modules are generated from them by
``python scripts/gen_protos.py`` and committed. Import the modules you need, e.g.
``from fusionrack.v1 import memory_pb2, memory_pb2_grpc``.
"""
