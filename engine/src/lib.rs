//! recman-engine: the sans-IO job state machine (`core`), its simulator
//! (`sim`), the engine runtime, and the `recman` command line (`cli`).

pub mod api;
pub mod cli;
pub mod core;
pub mod runtime;
pub mod sim;
pub mod view;
