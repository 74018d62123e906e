//! recman-engine: the engine runtime around the pure `recman-core`, the
//! read-side view, the HTTP API and the `recman` command line (`cli`).

pub mod api;
pub mod cli;
pub mod runtime;
pub mod view;
