// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ReputationRegistry (interface only)
/// @notice The upstream ReputationRegistry's ABI, so that its events and reverts decode by name
/// with lcw's bindings. The devnet deploys no ReputationRegistry: SessionManager weights its draw
/// by stake alone (contracts/README.md).
interface ReputationRegistry {
    error InvalidParam();
    error NotAuthorized(address caller);
    error ZeroAddress();

    event ReputationUpdated(address indexed worker, uint64 newScore, uint8 reason);
    event ReputationParamsUpdated(
        uint64 completionReward, uint64 disputeWinReward, uint64 timeoutPenalty, uint64 disputeLossPenalty
    );

    struct WorkerReputation {
        uint64 score;
        uint32 completions;
        uint32 disputesLost;
        uint32 timeouts;
        bool initialized;
    }

    function getReputation(address worker) external view returns (WorkerReputation memory);
    function getScore(address worker) external view returns (uint256);
    function MAX_SCORE() external view returns (uint64);
    function START_SCORE() external view returns (uint64);
    function recordCompletion(address worker) external;
    function recordDisputeLoss(address worker) external;
    function recordDisputeWin(address worker) external;
    function recordTimeout(address worker) external;
    function setParams(uint64 completionReward, uint64 disputeWinReward, uint64 timeoutPenalty, uint64 disputeLossPenalty)
        external;
}
