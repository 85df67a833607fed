rm -rf storage/overlay/L2
