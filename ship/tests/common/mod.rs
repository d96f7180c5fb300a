pub mod weed;
