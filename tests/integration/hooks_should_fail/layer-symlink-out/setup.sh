rm storage/overlay/l/BBB && ln -s /etc storage/overlay/l/BBB
