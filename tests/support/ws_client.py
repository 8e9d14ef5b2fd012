"""A browser-like MQTT client for tests/websocket.rs: Debian's paho-mqtt over WebSocket.

usage: ws_client.py PORT USER PASSWORD MODE RELAY [CA_FILE]
  switch   connect, subscribe to pimesh/#, send ON to RELAY and wait for its ON state;
           prints "ok"
  refused  connect and print the CONNACK return code (the connection must be refused)
With CA_FILE the connection is WebSocket over TLS (wss) to 127.0.0.1 with the mesh's CA.
Every wait has a deadline; a failure exits non-zero with the reason.
"""
import sys
import threading

import paho.mqtt.client as mqtt

port, user, password, mode, relay = sys.argv[1:6]
port = int(port)
ca = sys.argv[6] if len(sys.argv) > 6 else None
WAIT = 10

connected = threading.Event()
subscribed = threading.Event()
switched = threading.Event()
result = {}


def on_connect(client, userdata, flags, rc):
    result["rc"] = rc
    connected.set()


def on_message(client, userdata, msg):
    result.setdefault("topics", []).append(msg.topic)
    if msg.topic == "pimesh/" + relay and b'"state":"ON"' in msg.payload:
        switched.set()


c = mqtt.Client("browser-%d" % port, transport="websockets")
c.ws_set_options(path="/mqtt")
if ca:
    c.tls_set(ca_certs=ca)
c.username_pw_set(user, password)
c.on_connect = on_connect
c.on_message = on_message
c.on_subscribe = lambda *args: subscribed.set()
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
if not connected.wait(WAIT):
    sys.exit("no CONNACK over WebSocket")
if mode == "refused":
    print(result["rc"])
    c.loop_stop()
    sys.exit(0)
if result["rc"] != 0:
    sys.exit("connection refused with return code %d" % result["rc"])
c.subscribe("pimesh/#", 1)
if not subscribed.wait(WAIT):
    sys.exit("no SUBACK")
c.publish("pimesh/%s/set" % relay, "ON", qos=1)
if not switched.wait(WAIT):
    sys.exit("%s never showed ON; saw %r" % (relay, result.get("topics")))
c.disconnect()
c.loop_stop()
print("ok")
