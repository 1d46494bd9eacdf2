"""What a query image and a `dsah serve` client may ask for: the defaults, in one module light enough for the
command line to show them without importing numpy or PIL (dsah.data.imaging and dsah.search.serve use them)."""

MAX_PIXELS = 40_000_000      # query images: width x height from the header, refused above it before decoding
MAX_UPLOAD = 5 * 1024 * 1024  # bytes of an uploaded image
THREADS = 8                  # worker threads: requests answered at once (encoding is one at a time anyway)
BACKLOG = 256                # connections waiting for a free worker (the kernel caps it at net.core.somaxconn)
TIMEOUT = 10.0               # seconds a connection has to send its whole request
