//! The server around midge-core. (being written)
