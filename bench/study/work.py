# One user's Python process in bench/study: import a broad set of the
# standard library, hold some heap, say ready, then wait to be measured.
#   python3 work.py DIR [full|small]      (writes DIR/python.ready)
# small (make demo): about 30 modules, among them those that map libraries
# of their own (ssl, sqlite3, decimal, ctypes, lzma, bz2, expat), and a
# quarter of the heap.
import sys

MODULES = """argparse ast asyncio base64 bisect bz2 calendar collections concurrent.futures
configparser contextlib copy csv ctypes dataclasses datetime decimal difflib email email.mime.text
enum fnmatch fractions ftplib functools gettext glob gzip hashlib heapq hmac html html.parser
http.client http.server http.cookies imaplib inspect io ipaddress itertools json locale logging
logging.handlers lzma mailbox mimetypes multiprocessing numbers operator optparse pathlib pickle
pkgutil platform plistlib poplib pprint queue quopri random re sched secrets selectors shelve shlex
shutil signal smtplib socket socketserver sqlite3 ssl statistics string struct subprocess tarfile
tempfile textwrap threading timeit tokenize traceback typing unicodedata unittest urllib.parse
urllib.request uuid warnings weakref wsgiref.simple_server xml.dom.minidom xml.etree.ElementTree
xml.sax xmlrpc.client zipfile zlib""".split()

SMALL = """argparse base64 bz2 collections csv ctypes datetime decimal email.mime.text hashlib http.client
json logging lzma pathlib pickle random re socket sqlite3 ssl subprocess tempfile textwrap threading
typing unicodedata urllib.request uuid xml.etree.ElementTree zlib""".split()

small = len(sys.argv) > 2 and sys.argv[2] == "small"
if small:
    MODULES = SMALL
missing = []
for name in MODULES:
    try:
        __import__(name)
    except ImportError:
        missing.append(name)

import json, random, hashlib, decimal, sqlite3

# Heap: records, their JSON, a small in-memory database, and a buffer.
nrec = 2000 if small else 8000
records = [{"id": i, "name": "user-%d" % i, "score": decimal.Decimal(i) / 7, "tags": [str(i % 13)] * 3}
           for i in range(nrec)]
blob = json.dumps(records, default=str)
parsed = json.loads(blob)
db = sqlite3.connect(":memory:")
db.execute("create table t (k integer primary key, v text)")
db.executemany("insert into t values (?, ?)", ((i, "v%d" % i) for i in range(nrec)))
rng = random.Random(42)
# 1 MiB of random bytes (small: made in C, not byte by byte in Python).
buf = bytearray(rng.randbytes(1 << 20)) if small else bytearray(rng.getrandbits(8) for _ in range(1 << 20))
digest = hashlib.sha256(buf).hexdigest()

d = sys.argv[1]
with open(d + "/python.ready", "w") as f:
    f.write("%d modules, missing: %s\n" % (len(MODULES) - len(missing), " ".join(missing) or "none"))
import time
while True:
    time.sleep(3600)
