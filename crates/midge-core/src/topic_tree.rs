//! Subscription tree: topic filters to subscribers. (being written)
