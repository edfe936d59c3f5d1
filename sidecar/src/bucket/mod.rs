//! The bucket's state, read and written on top of the store: the one owner of a node backup's
//! state ([`node_backup`]) and the backup index ([`index`]).
pub mod index;
pub mod node_backup;
