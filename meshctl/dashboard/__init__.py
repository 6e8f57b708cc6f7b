"""`meshctl dashboard`: a live web picture of the mesh, served from this host.

    graph.py    the service graph from two scrapes of the proxies' metrics (pure)
    server.py   the aiohttp app: the page, static files, /api/graph; scrapes every 2 s
    static/     index.html, dashboard.js, and Cytoscape.js (vendor/, MIT, shipped: no CDN)

docs/dashboard.md explains it.
"""
