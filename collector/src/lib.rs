//! Empreinte's collector. Not written yet: see issue 4 (receive, store, carbon, serve).
//! It will depend only on `empreinte-shared` for the wire format and units.
pub mod carbon;
