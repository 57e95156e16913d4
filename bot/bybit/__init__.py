"""The Bybit v5 edge: wire types, REST client, websocket feed."""
