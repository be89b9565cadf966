//! Domain types: what a job, a file and a segment are, and the rules they obey.
//!
//! Nothing here knows about HTTP or SQL. The API parses requests into these types ("parse,
//! don't validate"), the store persists them and the engine runs them.

pub mod delivery;
pub mod file;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod manifest;
pub mod paths;
pub mod request;
pub mod segment;
pub mod template;
pub mod time;

pub use delivery::{Delivery, DeliveryStatus, DeliveryTarget};
pub use file::{FileError, FileRecord, FileStatus, OnConflict, Sha256};
pub use idempotency::{IdempotencyKey, KeyedJob};
pub use ids::{FileId, JobId};
pub use job::{Job, JobChanges, JobError, JobLimits, JobStatus, Priority, Transition};
pub use request::{FileRequest, JobRequest, NewFile, NewJob, ValidationError};
pub use segment::Segment;
