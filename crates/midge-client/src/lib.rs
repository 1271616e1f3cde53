//! A small async MQTT client on midge-codec. (being written)
