//! The messaging domain: conversations, members, messages, reactions and
//! receipts, as plain functions over a read connection or a write transaction.

pub mod access;
pub mod conversations;
pub mod export;
pub mod messages;
