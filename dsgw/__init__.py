"""Generated from proto/dsgw/v1 by scripts/gen_proto.py. Do not edit."""
