//! mosquitto.conf parsing. (being written)
