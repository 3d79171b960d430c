"""CRI v1 (``runtime.v1``): ``api.proto`` and its generated ``api_pb2`` / ``api_pb2_grpc`` (see scripts/gen_cri.sh)."""
