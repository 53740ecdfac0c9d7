//! runq-common: everything the worker and the CLI share — configuration, Redis access,
//! RQ's key layout and encodings, the job model, serializers and the Lua scripts that
//! make every job state change a single atomic round trip.

pub mod budget;
pub mod config;
pub mod connect;
pub mod description;
pub mod echo;
pub mod error;
pub mod ints;
pub mod job;
pub mod keys;
pub mod msgpack;
pub mod nodb;
pub mod payload;
pub mod pickle_budget;
pub mod pyjson;
pub mod results;
pub mod rq;
pub mod scripts;
pub mod sentinel;
pub mod serializer;
pub mod taskspec;
pub mod timefmt;
pub mod tls;
pub mod value;
pub mod worker_state;

pub use config::Config;
pub use error::{Error, Result};
pub use keys::Keys;
pub use serializer::SerializerKind;
