//! Results in other tools' formats: `runner export tensorboard`.

pub mod tensorboard;
