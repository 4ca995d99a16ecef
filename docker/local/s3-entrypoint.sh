#!/bin/sh
# `server DIR` (MinIO's command) starts moto's S3 server on MinIO's port; anything else runs as given.
set -eu
if [ "${1:-}" = server ]; then
  exec moto_server --host 0.0.0.0 --port 9000
fi
exec "$@"
