rm bundle/config.json
