//! A labelled model-based estimate. (Being written.)
