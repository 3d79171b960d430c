"""Wire definitions of the APIs microkube speaks over gRPC (``criapi.runtime.v1``: CRI v1).

The generated modules need ``protobuf`` and ``grpcio`` (``pip install microkube-interfaces[grpc]``); import
them only from code that speaks gRPC.
"""
