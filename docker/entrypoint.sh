#!/bin/sh
# Both images' entrypoint: wait until Postgres, Redis and S3 accept connections, then run the command
# (the image's default: `mcu serve ...` or `mcu-workers`; or e.g. `mcu db upgrade`, `mcu keys create ...`).
set -eu
python /usr/local/lib/mcu/wait_for_services.py
exec "$@"
