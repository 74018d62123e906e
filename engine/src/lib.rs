//! recman-engine: the engine runtime around the pure `recman-core`
//! (`runtime`, with the events relay) and the engine handle that starts it
//! with its workers (`handle`); the read model (`view`) and how it is shown
//! (`render`); the HTTP API (`api`), its client (`client`) and the web
//! console served beside it (`console`); the
//! benchmarks (`bench`); the preflight of targets (`preflight`); and the `recman` command line (`cli`), which only
//! wires these together.

pub mod api;
pub mod archive;
pub mod bench;
pub mod broker;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod console;
pub mod demo;
pub mod handle;
pub mod home;
pub mod notify;
pub mod preflight;
pub mod prune;
pub mod render;
pub mod runtime;
pub mod signal;
pub mod source;
pub mod view;
