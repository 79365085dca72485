// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice The AIConfig getters the registries read at call time (parameters are never cached).
interface IAIConfig {
    function getAckTimeout() external view returns (uint256);
    function getCompletionTimeout() external view returns (uint256);
    function getDisputeWindow() external view returns (uint256);
    function getResolutionTimeout() external view returns (uint256);
    function getWorkerFeeBps() external view returns (uint256);
    function getProtocolFeeBps() external view returns (uint256);
    function getReleaseBountyBps() external view returns (uint256);
    function getTimeoutBountyBps() external view returns (uint256);
    function getTimeoutSlashBps() external view returns (uint256);
    function getCompletionTimeoutSlashBps() external view returns (uint256);
    function getDisputeSlashBps() external view returns (uint256);
    function getMaxSlashBps() external view returns (uint256);
    function getDisputeBondMultiplier() external view returns (uint256);
    function getMinWorkerStake() external view returns (uint256);
    function getSuspensionCooldown() external view returns (uint256);
    function getSuspensionThreshold() external view returns (uint256);
    function getDispatcherAddress() external view returns (address);
    function getDisputerAddress() external view returns (address);
    function getSessionManagerAddress() external view returns (address);
    function getSortitionEnabled() external view returns (bool);
    function getClaimWindowBlocks() external view returns (uint256);
    function getMaxConcurrentJobs() external view returns (uint256);
    function calculateJobFee(bytes32 modelId) external view returns (uint256);
    function isModelEnabled(bytes32 modelId) external view returns (bool);
}

/// @notice The WorkerRegistry surface JobRegistry and SessionManager call.
interface IWorkerRegistry {
    function isEligible(address worker, bytes32 modelId) external view returns (bool);
    function getWorkerStake(address worker) external view returns (uint256);
    function getActiveJobCount(address worker) external view returns (uint256);
    function getWorkerCapabilities(address worker) external view returns (uint256);
    function getCapabilityCount() external view returns (uint16);
    function getWorkerEncryptionKey(address worker) external view returns (bytes memory);
    function incrementActiveJobs(address worker, bytes32 modelId) external;
    function decrementActiveJobs(address worker, bytes32 modelId) external;
    function slash(address worker, uint256 bps) external;
    function slashWithBounty(address worker, uint256 bps, address bountyRecipient)
        external
        returns (uint256 slashAmount, uint256 bountyPaid);
}

/// @notice The JobRegistry surface SessionManager calls.
interface IJobRegistry {
    function adoptSession(
        address user,
        bytes32 modelId,
        address worker,
        bytes calldata encWorkerKey,
        bytes calldata encDisputerKey
    ) external returns (uint256 sessionId);
    function isDelegateAuthorized(address user, address delegate) external view returns (bool);
}
