"""Container HEALTHCHECK: exit 0 when GET /v2/health/ready answers 2xx (slim images have no curl).

Reads SEQSERVE_PORT (default 8000) and probes 127.0.0.1; standard library only.
"""

import os
import sys
import urllib.request

URL = f"http://127.0.0.1:{os.environ.get('SEQSERVE_PORT', '8000')}/v2/health/ready"

try:
    with urllib.request.urlopen(URL, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "2"))) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception as exc:  # connection refused, HTTP 503 while loading, timeout
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)
