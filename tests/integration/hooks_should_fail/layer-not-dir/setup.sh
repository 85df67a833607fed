rm -rf storage/overlay/L2/diff && echo x > storage/overlay/L2/diff
