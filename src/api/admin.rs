//! Placeholder: this API area is being built; every route answers 404 until then.

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::state::SharedState;

pub fn routes(_state: SharedState) -> BoxedFilter<(Response,)> {
    warp::any()
        .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
        .boxed()
}
