head -c 8192 /dev/urandom > index.db
