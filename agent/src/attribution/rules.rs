//! Project resolution rules. (Being written.)
