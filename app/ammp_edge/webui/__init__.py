"""The local web UI (`ammp-edge webui`): commissioning a site from a laptop next to the devices.

Bottle app (app.py wires security.py and the page groups in pages/) served by cheroot's threaded WSGI
server (server.py); everything it shows is gathered in the background (state.py) so pages render fast;
every asset ships in the package (templates/, static/), so it works without internet. Security: auth.py
and security.py.
"""
