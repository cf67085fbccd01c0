"""Generated gRPC/protobuf code of proto/rknnlink/v1/rknnlink.proto (regenerate with `make proto`)."""
